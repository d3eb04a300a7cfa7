"""The `iod` command (the I/O daemon: issue 3)."""
from common.placeholder import not_built

main = not_built("iod", 3)
