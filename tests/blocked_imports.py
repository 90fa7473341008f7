"""A prelude for ``python -c`` that makes packages unimportable, whatever is installed: a meta path finder
that answers first. ``sys.argv[1]`` names them, comma-separated; the code after the prelude reads
``sys.argv[2:]``. The layer tests run robot-side code behind it to prove it needs none of them."""

BLOCK_PRELUDE = r"""
import sys
BLOCKED = {b for b in sys.argv[1].split(",") if b}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked: a robot does not install it", name=name)
        return None
sys.meta_path.insert(0, Block())
"""
