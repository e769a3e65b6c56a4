"""Who owns a socket: its process (proc.py), its container (cgroup.py), the container's
name, image and pod (docker.py), joined onto record columns (join.py)."""
