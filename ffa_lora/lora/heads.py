"""Task heads on top of the encoder, chosen by :attr:`LoRASpec.head`.

``"pooler"`` keeps the checkpoint's ``AutoModelForSequenceClassification`` as it is (for BERT a
linear classifier on the tanh-activated [CLS] pooler output). ``"mean_linear"`` replaces it by
:class:`MeanPoolClassifier`: the L2-normalised, attention-masked mean of the encoder's last
hidden states — the pooling sentence-transformers such as all-MiniLM-L6-v2 were trained
with — followed by one linear layer, initialised to zero.

Why it matters under DP-SGD: a zero head gives every sample the same small, bounded head
gradient (``‖(p − y) ⊗ f‖ ≤ √2`` for unit-norm features ``f``), so clipping loses nothing and
the head learns from the first step, as a linear probe on the frozen features would; the
adapter's gradient (which flows through the head) grows as the head does.

Both heads keep the parameter names of the original model — the encoder under the model's
``base_model_prefix`` (``bert.…``) and the head as ``classifier`` (same shape for BERT) — so
LoRA keys, the update layout, aggregation and PEFT's ``modules_to_save`` work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ffa_lora.errors import ConfigError
from ffa_lora.lora.spec import LoRASpec


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``hidden`` (batch × tokens × dim) over the tokens the mask keeps."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class MeanPoolClassifier(nn.Module):
    """Encoder → masked mean pooling → L2 normalisation → linear classifier.

    Args:
        base: a Hugging Face ``…ForSequenceClassification`` model; its encoder (attribute
            ``base.base_model_prefix``) is reused, its own head is dropped.
        num_labels: classes of the new linear head (zero-initialised here; the adapter state
            loaded afterwards decides its values).
    """

    def __init__(self, base: Any, num_labels: int) -> None:
        super().__init__()
        prefix = getattr(base, "base_model_prefix", "")
        encoder = getattr(base, prefix, None) if prefix else None
        if not isinstance(encoder, nn.Module):
            raise ConfigError(
                "head: 'mean_linear' needs a Hugging Face classifier with an encoder under "
                f"base_model_prefix; {type(base).__name__} has none; use head 'pooler'"
            )
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # type: ignore[assignment]  # unused [CLS] pooler: skip its compute
        self.config = base.config
        self.name_or_path = getattr(base, "name_or_path", None)  # peft records it
        self.base_model_prefix = prefix
        self.add_module(prefix, encoder)
        self.classifier = nn.Linear(int(base.config.hidden_size), num_labels)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    @property
    def encoder(self) -> nn.Module:
        """The wrapped encoder."""
        module: nn.Module = getattr(self, self.base_model_prefix)
        return module

    def features(self, input_ids: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """The unit-norm pooled features the classifier sees."""
        inputs = {k: v for k, v in kwargs.items() if k in ("token_type_ids", "inputs_embeds")
                  and v is not None}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs)
        pooled = mean_pool(out[0], attention_mask)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Logits (and the mean cross-entropy when ``labels`` are given), as HF models return."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.classifier(self.features(input_ids, attention_mask, **kwargs))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def apply_head(base: Any, spec: LoRASpec) -> Any:
    """The classifier ``spec.head`` asks for, built around ``base`` (before LoRA wraps it)."""
    if spec.head == "pooler":
        return base
    return MeanPoolClassifier(base, spec.num_labels)
