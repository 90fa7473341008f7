"""Robot adapters behind one interface (hardware.robot.Robot): the digital twin (pybullet), and the
vehicle drivers. Nothing here imports torch; a driver's own library is imported only by its adapter."""
