"""Settings dataclasses check themselves when made: the one error they raise, and the checks they share. Messages
name the setting ("steps 0: must be at least 1"); the CLI, which knows its flags, names the flag instead."""


class SettingsError(ValueError):
    """Settings that cannot work; one line for the user. setting: the field at fault; detail: the rest."""

    def __init__(self, setting: str, detail: str):
        self.setting, self.detail = setting, detail
        super().__init__(f"{setting.replace('_', ' ')} {detail}")


def at_least(settings, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(settings, name)
        if value < minimum:
            raise SettingsError(name, f"{value}: must be at least {minimum}")


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise SettingsError(name, f"{value}: choose one of {', '.join(choices)}")
