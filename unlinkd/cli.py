"""The `unlinkd` command (batched PURGE to the iods: issue 5)."""
from common.placeholder import not_built

main = not_built("unlinkd", 5)
