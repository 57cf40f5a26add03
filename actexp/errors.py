"""Errors the user can fix: the CLI prints the message as one line and exits with `exit_code`."""


class ActexpError(Exception):
    exit_code = 1


class ConfigError(ActexpError):
    exit_code = 2


class DatasetMissing(ActexpError):
    pass
