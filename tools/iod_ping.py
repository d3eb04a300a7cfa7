"""The `iod_ping` command (issue 3)."""
from common.placeholder import not_built

main = not_built("iod_ping", 3)
