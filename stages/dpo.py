"""DPO (optional stage): TRL's DPOTrainer on preference pairs, against the frozen starting model.

Users try it after SFT and often reject it (published lines report MMLU losses); run it as an
experiment (`--set experiment.name=...`) so a rejection stays on record and in the card.

Checks   starts from a model whose tokenizer can chat; the dataset has prompt/chosen/rejected.
Examples the preference pairs as they are: TRL applies the chat template and builds the
         prompt/completion masks itself.
Objective DPO (`dpo.loss_type`, default sigmoid) with strength `dpo.beta` against the frozen start
         model; with `lora`, TRL uses the base with the adapter disabled as the reference instead.
Defaults stages/configs/dpo.yaml; `dpo: {beta: 0.1, loss_type: sigmoid}`.
"""

import contextlib
import io

from slm.config import DPOSpec
from slm.errors import require_extra
from slm.examples import stage_rows
from slm.modeling import load_model
from slm.padding import fit_model_to_pad
from slm.recipe import StageContext

COLUMNS = ["prompt", "chosen", "rejected"]


def plan(cfg, ctx: StageContext):
    require_extra("trl", "dpo", "the dpo stage")
    init, tokenizer_ref, _, pad = ctx.chat_start(cfg, "preference optimization (usually on the SFT champion)")
    ctx.dataset(cfg, needs_column="chosen")
    return ctx.job(cfg, __name__, init, tokenizer_ref, packable=False, pad=pad, dpo=cfg.dpo or DPOSpec())


def examples(job, tokenizer, split: str):
    return stage_rows(job, split, COLUMNS).select_columns(COLUMNS)


def trainer(job, model, tokenizer, arguments: dict, train_data, eval_data, callbacks):
    from trl import DPOConfig, DPOTrainer  # the `dpo` extra, checked when the stage is planned

    args = DPOConfig(**arguments, beta=job.dpo.beta, loss_type=[job.dpo.loss_type], max_length=job.max_length)
    reference = (
        None if job.lora else fit_model_to_pad(load_model(job.init.materialize(), job.trust_remote_code), job.pad)
    )
    # TRL tokenizes with datasets.map, whose fingerprinting disassembles the map function through
    # dill; under Ray's stdout forwarding that bytecode dump lands in the job log. Keep it out.
    with contextlib.redirect_stdout(io.StringIO()):
        return DPOTrainer(
            model=model,
            ref_model=reference,
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
