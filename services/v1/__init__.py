"""Generated from proto/notifyagent/v1 by scripts/genproto.py; do not edit."""
