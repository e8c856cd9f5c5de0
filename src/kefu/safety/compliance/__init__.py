"""Content compliance for AGENT text (model replies, agent macros): 《广告法》 absolute claims and false promises,
promotion claims that contradict the shop's active promotions, banned content, and other customers' PII in a reply.

``check`` finds violations, ``rewrite`` returns a compliant text. Rules come from built-in defaults plus an optional
per-shop YAML file (``ComplianceRules.load``); every hit names its rule and the law article it rests on.

Apply these to what the shop says, not to what customers ask: "最快什么时候发货" is a fine question, and the default
rules avoid such false positives anyway (最近, 最后, 最快 …, 第一次, 第一天 …, 100%纯棉 as a composition fact).

One module per concern: ``violation`` (the hit record, law articles), ``lexicon`` (reads ``adlaw_terms.yaml``: the
广告法 terms by category with their sources), ``adlaw`` (the rule set built from it, banned words), ``negation``
(terms in a negated or refusing statement are not claims), ``claims`` (promotion claims against the promotions in
force now), ``leak`` (PII of other customers), ``checker`` (check, rewrite).
"""

from __future__ import annotations

from kefu.safety.compliance.adlaw import (DEFAULT_ABSOLUTE, DEFAULT_ALLOW, DEFAULT_BANNED, DEFAULT_PROMISES, MATERIALS,
                                          PERCENT_TERMS, ComplianceRules)
from kefu.safety.compliance.checker import check, rewrite
from kefu.safety.compliance.claims import (PromotionClaim, active_claims, parse_promotion_claims, promotion_state,
                                           promotions_in_force)
from kefu.safety.compliance.leak import find_pii, scan_output
from kefu.safety.compliance.violation import (ART_ABSOLUTE, ART_BANNED, ART_EDUCATION, ART_FALSE, ART_INVESTMENT,
                                              ART_MEDICAL, ART_PII, ART_PRICE, ART_WELL_KNOWN, Violation)

__all__ = ["ComplianceRules", "Violation", "check", "rewrite", "scan_output", "find_pii", "PromotionClaim",
           "parse_promotion_claims", "active_claims", "promotions_in_force", "promotion_state", "DEFAULT_ABSOLUTE", "DEFAULT_ALLOW", "DEFAULT_PROMISES",
           "DEFAULT_BANNED", "MATERIALS", "PERCENT_TERMS", "ART_ABSOLUTE", "ART_FALSE", "ART_MEDICAL", "ART_EDUCATION",
           "ART_INVESTMENT", "ART_WELL_KNOWN", "ART_PRICE", "ART_BANNED", "ART_PII"]
