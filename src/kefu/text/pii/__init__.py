"""PII detection and masking for Chinese customer-service text.

Every span is replaced by a typed placeholder (``[手机号]``, ``[身份证号]`` ...) so the fine-tuned model still learns
*that* a customer gave a phone number without ever seeing one. Detectors validate what they find (ID-card checksum
and birth date, Luhn for bank cards, operator prefixes for mobiles, area codes for landlines) so prices, dates,
SKUs, sizes and promotion rules survive. Names and addresses have no checksum: names need a context word
(我叫/收件人/X先生 ...) and a known surname, addresses need a chain of administrative-division components
(lexicon of provinces/cities/counties plus 镇/街道/路/号/小区/栋/室 patterns).

Speed matters (the prepare stage masks millions of turns): one search for a hint rejects most turns, one combined
regex finds every numeric/e-mail/code candidate in a single pass, and the name/address pass only runs on turns
holding one of its trigger words. ``mask_many`` masks a batch, each distinct text once.

One module per concept: ``spans`` (types and placeholders), ``validators`` (checksums), ``lexicons`` (word lists),
``address`` and ``names`` (grammars), ``hints`` (the cheap prefilters), ``masker`` (the Masker and the module API).
"""

from __future__ import annotations

from kefu.text.pii.masker import TRIGGER_CHARS, Masker, _default, find_pii, mask, mask_many
from kefu.text.pii.spans import JDDC_KEPT, JDDC_PLACEHOLDERS, PLACEHOLDERS, PiiSpan
from kefu.text.pii.validators import luhn_ok, valid_bank_card, valid_id_card, valid_landline, valid_mobile

__all__ = ["PLACEHOLDERS", "JDDC_PLACEHOLDERS", "JDDC_KEPT", "TRIGGER_CHARS", "PiiSpan", "Masker", "find_pii", "mask",
           "mask_many", "valid_id_card", "luhn_ok", "valid_bank_card", "valid_mobile", "valid_landline"]
