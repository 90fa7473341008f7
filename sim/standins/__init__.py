"""Protocol stand-ins for hardware that cannot be here: each speaks the vehicle's real wire protocol over
a real socket, driven by Tether's simulator, so that the real client library (cflib, pymavlink)
connects to it in CI. Not installed on a robot."""
