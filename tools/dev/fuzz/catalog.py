"""Every fuzz target by name: the codecs' (targets.py) and the whole
dispatcher's (dispatch.py), which builds on them."""

from tools.dev.fuzz import dispatch, targets


def get(name):
    if name == "dispatch":
        return dispatch.TARGET
    return targets.TARGETS[name]


def names():
    return sorted(targets.TARGETS) + ["dispatch"]
