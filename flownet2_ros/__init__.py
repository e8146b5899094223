"""flownet2_ros: dense optical flow for ROS 2 from FlowNet 2.0. The library (everything but ``ros``) does not import rclpy."""

__version__ = "0.1.0"
