"""docs/options.md: every option, written from the same fields as the flags (``make docs``;
tests/test_config.py fails when the page drifts from job/config.py)."""

from __future__ import annotations

from job import config
from job.config import Section
from job.options import describe, flag


def options_markdown(root: type[config.JobConfig] | None = None) -> str:
    """docs/options.md: every option, one table a section."""
    root = root or config.JobConfig
    lines = [
        "# Options",
        "",
        "Generated from job/config.py by `make docs`; tests/test_config.py fails when it drifts.",
        "Each option is a flag of `huggingtweets run` (`prepare` takes Cleaning and Data)",
        "and a key of a `--config` file, in its section. In a manifest, each is a key of its",
        "`defaults` or of a bot, in its section, but for `wandb`: the manifest's own top-level",
        "`wandb` section, for all its bots (where metrics go is the job's, not a bot's).",
    ]
    for section, info in root.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, Section)
        title = (model.__doc__ or section).strip().splitlines()[0]
        lines += ["", f"## `{section}`: {title}", "", "| flag | key | default | what |"]
        lines.append("| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = ", ".join(map(str, default)) if isinstance(default, list) else default
            what = describe(field).replace("|", "\\|")
            name_flag = flag(model, name)
            if field.annotation is bool:
                name_flag += f"/--no-{name_flag}"
            lines.append(
                f"| `--{name_flag}` | `{section}.{name}` | "
                f"{'' if shown is None else f'`{shown}`'} | {what} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # make docs
    print(options_markdown(), end="")
