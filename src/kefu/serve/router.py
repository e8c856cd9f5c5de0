"""Per-turn routing: light path (FAQ / KG direct answer / tools) vs the full model vs a human.

Rules first (explicit 转人工 requests, anger/complaint signals, repeated failure -> human; an order number -> the
order tools), then a trained classifier: character n-gram TF-IDF + logistic regression giving the probability that
a turn needs the strong (full) model. Labels come from prepared data's intents: intents the KG, FAQ or tools answer
are ``light``, the rest ``strong``. Like RouteLLM, the decision threshold is calibrated so that a chosen share of
traffic goes to the full model, and the router is judged by a quality-vs-%-full-model curve.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from kefu.artifacts.dialogues import read_dialogues
from kefu.paths import state_path
from kefu.serve.text import normalise
from kefu.text.claims import order_numbers
from kefu.text.normalize import simplify
from kefu.types import KefuError

# Intents whose answers come from the knowledge graph, the FAQ or the order tools.
LIGHT_INTENTS = frozenset({
    "product_inquiry", "stock_inquiry", "price_inquiry", "promotion_inquiry", "order_status", "logistics_tracking",
    "refund_status", "greeting", "invoice", "payment",
})
HANDOFF_INTENTS = frozenset({"human_handoff"})

EXPLICIT_HANDOFF = re.compile(r"转人工|人工客服|找人工|要人工|接人工|真人客服|人工服务|转接人工|叫你们(?:经理|主管)|人工$")
ANGER = re.compile(r"投诉|12315|消协|消费者协会|工商局|骗子|欺诈|垃圾|什么破|气死|太过分|报警|曝光|差评|举报|恶心|坑人|"
                   r"滚|退钱|律师|起诉|[!！]{3,}")
FAILURE = re.compile(r"没用|答非所问|不是这个意思|不是问这个|你听不懂|听不懂|还是不行|机器人|说了半天|没解决|看不懂你")
ORDERY = re.compile(r"订单|单号|到哪|物流|快递|发货|签收|退款|进度|查一下|查询|状态")

_KEYWORD_INTENTS = [
    ("human_handoff", EXPLICIT_HANDOFF), ("complaint", ANGER),
    ("logistics_damaged", re.compile(r"破损|坏了|压坏|摔坏|裂")),
    ("logistics_lost", re.compile(r"丢件|丢了|没收到|找不到包裹")),
    ("logistics_delay", re.compile(r"还没到|太慢|延迟|怎么还没|几天了")),
    ("address_change", re.compile(r"改地址|修改地址|地址写错|换个地址")),
    ("refused_delivery", re.compile(r"拒收")),
    ("refund_status", re.compile(r"退款.*(?:进度|到账|多久)|钱.*(?:退|到账)")),
    ("return_request", re.compile(r"退货|退掉|无理由|退款")),
    ("exchange_request", re.compile(r"换货|换一件|换个码|换尺码|换颜色")),
    ("repair_request", re.compile(r"维修|保修|修一下|返修")),
    ("invoice", re.compile(r"发票|开票|抬头")),
    ("payment", re.compile(r"付款|支付|花呗|信用卡|分期")),
    ("order_status", re.compile(r"订单|单号")),
    ("logistics_tracking", re.compile(r"物流|快递|到哪|发货|运单")),
    ("size_recommendation", re.compile(r"尺码|码数|多大码|穿什么码|身高|体重|偏大|偏小|\d{2,3}(?:cm|斤|公斤|kg)")),
    ("promotion_inquiry", re.compile(r"优惠|满减|活动|折扣|打折|优惠券|券|赠品")),
    ("price_inquiry", re.compile(r"多少钱|价格|价钱|贵|便宜")),
    ("stock_inquiry", re.compile(r"有货|库存|缺货|补货|还有.*(?:吗|么)")),
    ("product_recommendation", re.compile(r"推荐|哪款|适合|选哪个|对比")),
    ("product_inquiry", re.compile(r"材质|面料|防水|保暖|重量|颜色|功能|参数|SL-\d{5}", re.I)),
    ("greeting", re.compile(r"^(?:你好|您好|在吗|在不在|hi|hello|哈喽|谢谢|好的|嗯)[!！。?？~～]*$", re.I)),
]


def guess_intent(text: str) -> str:
    """Keyword intent for summaries and for routing without a fitted classifier."""
    text = simplify(text).strip()
    for intent, pattern in _KEYWORD_INTENTS:
        if pattern.search(text):
            return intent
    return "other"


def label_for_intent(intent: str) -> int:
    """1 = needs the strong (full) model, 0 = the light path suffices."""
    return 0 if intent in LIGHT_INTENTS else 1


def load_training_turns(path: str | Path) -> tuple[list[str], list[str]]:
    """User turns and their intents from prepared ``train.jsonl`` (``meta.intents``: one per user turn)."""
    texts, intents = [], []
    for line in read_dialogues(path, None):
        user_turns = [t.content for t in line.dialogue.messages if t.role == "user"]
        labels = line.dialogue.meta.get("intents") or []
        if len(labels) != len(user_turns):
            raise KefuError(f"{line.where}: meta.intents has {len(labels)} labels for {len(user_turns)} user turns")
        texts.extend(user_turns)
        intents.extend(labels)
    if not texts:
        raise KefuError(f"{path}: no user turns found")
    return texts, intents


@dataclass
class RouterModel:
    """TF-IDF (character 1-3 grams) features, a logistic regression for P(strong) and one for the intent.

    Scoring is a sparse dot product done directly on the fitted coefficients (sklearn's per-call input validation
    costs more than the maths for one short turn), with a small per-text memo: chat traffic repeats itself.
    """

    vectorizer: Any
    clf: Any
    intent_clf: Any = None
    threshold: float = 0.5
    target_full_share: float = 0.3
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, texts: list[str], intents: list[str], *, target_full_share: float = 0.3,
            seed: int = 0) -> "RouterModel":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = np.array([label_for_intent(i) for i in intents])
        if len(set(labels.tolist())) < 2:
            raise KefuError("router fit: the data has only one class (all light or all strong); need both")
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=1, sublinear_tf=True)
        features = vectorizer.fit_transform([simplify(t) for t in texts])
        clf = LogisticRegression(max_iter=1000, C=4.0, class_weight="balanced", random_state=seed)
        clf.fit(features, labels)
        intent_clf = None
        if len(set(intents)) > 1:
            intent_clf = LogisticRegression(max_iter=1000, C=4.0, random_state=seed).fit(features, intents)
        model = cls(vectorizer, clf, intent_clf, 0.5, target_full_share,
                    {"n": len(texts), "strong_share": float(labels.mean())})
        model.calibrate(texts, target_full_share)
        return model

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_memo", None)
        return state

    def _features(self, texts: list[str]):
        import sklearn

        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self.vectorizer.transform([simplify(t) for t in texts])

    def _scores(self, features) -> np.ndarray:
        z = np.asarray(features @ self.clf.coef_.T).ravel() + self.clf.intercept_[0]
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, texts: Iterable[str]) -> np.ndarray:
        """P(strong) for each text."""
        return self._scores(self._features(list(texts)))

    def analyse(self, text: str) -> tuple[float, str]:
        """(P(strong), intent) of one turn, memoised."""
        memo = self.__dict__.setdefault("_memo", {})
        hit = memo.get(text)
        if hit is not None:
            return hit
        features = self._features([text])
        score = float(self._scores(features)[0])
        if self.intent_clf is None:
            intent = guess_intent(text)
        else:
            z = np.asarray(features @ self.intent_clf.coef_.T).ravel() + self.intent_clf.intercept_
            intent = str(self.intent_clf.classes_[int(np.argmax(z))])
        if len(memo) >= 4096:
            memo.clear()
        memo[text] = (score, intent)
        return score, intent

    def intent(self, text: str) -> str:
        return self.analyse(text)[1]

    def calibrate(self, texts: list[str], target_full_share: float) -> float:
        """Threshold such that ``target_full_share`` of these (representative) turns score at or above it."""
        scores = np.sort(self.score(texts))
        self.target_full_share = target_full_share
        if target_full_share <= 0:
            self.threshold = float(np.nextafter(scores[-1], np.inf))
        elif target_full_share >= 1:
            self.threshold = float(scores[0])
        else:
            self.threshold = float(np.quantile(scores, 1 - target_full_share, method="higher"))
        return self.threshold

    def save(self, path: str | Path) -> Path:
        """Pickle to ``path`` (load only router files you wrote: pickle runs code)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(self, handle)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RouterModel":
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                model = pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise KefuError(f"{path}: cannot load router model: {exc}") from exc
        if not isinstance(model, cls):
            raise KefuError(f"{path}: not a kefu router model")
        return model


def default_router_path(run_dir: str | Path | None = None) -> Path:
    """``<run>/router.pkl`` when serving a run, else ``$KEFU_HOME/router/router.pkl``."""
    return Path(run_dir) / "router.pkl" if run_dir else state_path("router", "router.pkl")


def quality_curve(scores: np.ndarray, labels: np.ndarray, points: int = 21) -> list[dict[str, float]]:
    """Quality vs share of turns sent to the full model.

    A turn is served well when it goes to the full model or when the light path suffices for it (label 0). Quality
    is the share served well; the random-routing baseline at the same share is reported alongside.
    """
    order = np.argsort(-scores, kind="stable")
    n = len(scores)
    strong_total = labels.sum()
    out = []
    for share in np.linspace(0, 1, points):
        k = int(round(share * n))
        routed_strong = np.zeros(n, dtype=bool)
        routed_strong[order[:k]] = True
        served = (~labels.astype(bool)) | routed_strong
        random_q = (n - strong_total + strong_total * (k / n if n else 0)) / n if n else 1.0
        out.append({"full_share": round(float(share), 4), "quality": float(served.mean()),
                    "random_quality": float(random_q),
                    "strong_recall": float(routed_strong[labels.astype(bool)].mean()) if strong_total else 1.0})
    return out


def curve_svg(curve: list[dict[str, float]], title: str = "router: quality vs % full model") -> str:
    """A small self-contained SVG line chart of the curve (router vs random)."""
    w, h, pad = 420, 300, 40

    def pts(key: str) -> str:
        return " ".join(f"{pad + p['full_share'] * (w - 2 * pad):.1f},{h - pad - p[key] * (h - 2 * pad):.1f}"
                        for p in curve)

    ticks = "".join(f'<text x="{pad + t * (w - 2 * pad):.0f}" y="{h - pad + 16}" font-size="10" '
                    f'text-anchor="middle">{int(t * 100)}%</text>' for t in (0, 0.25, 0.5, 0.75, 1))
    yt = "".join(f'<text x="{pad - 6}" y="{h - pad - t * (h - 2 * pad) + 3:.0f}" font-size="10" '
                 f'text-anchor="end">{t:.2f}</text>' for t in (0, 0.5, 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f'<rect width="{w}" height="{h}" fill="white"/>'
            f'<text x="{w / 2}" y="18" font-size="13" text-anchor="middle">{title}</text>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>{ticks}{yt}'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts("quality")}"/>'
            f'<polyline fill="none" stroke="#999" stroke-dasharray="4 3" points="{pts("random_quality")}"/>'
            f'<text x="{w - pad}" y="{pad + 10}" font-size="11" text-anchor="end" fill="#1f77b4">router</text>'
            f'<text x="{w - pad}" y="{pad + 24}" font-size="11" text-anchor="end" fill="#999">random</text>'
            f'<text x="{w / 2}" y="{h - 6}" font-size="11" text-anchor="middle">share of turns to the full model'
            f'</text></svg>')


def evaluate(model: RouterModel, texts: list[str], intents: list[str], out_dir: str | Path) -> dict[str, Any]:
    """Write ``router_curve.json`` and ``router_curve.svg``; return the summary."""
    labels = np.array([label_for_intent(i) for i in intents])
    scores = model.score(texts)
    curve = quality_curve(scores, labels)
    at_threshold = scores >= model.threshold
    served = (~labels.astype(bool)) | at_threshold
    summary = {"n": len(texts), "threshold": model.threshold, "target_full_share": model.target_full_share,
               "full_share": float(at_threshold.mean()), "quality": float(served.mean()), "curve": curve}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "router_curve.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "router_curve.svg").write_text(curve_svg(curve), encoding="utf-8")
    return summary


@dataclass
class RouteDecision:
    """Where one turn goes: ``path`` light | full | handoff, and why."""

    path: str  # light | full | handoff
    reason: str
    intent: str
    score: float | None = None


@dataclass(frozen=True)
class Route:
    """The router's one verdict on a turn, made before its facts are fetched and carried through the turn: a human
    now (``handoff``, the reason), whether the order tools should answer (``order_tool``), and what ``settle`` needs
    to choose the light path or the full model once the KG and the tools have answered. Settling asks nothing more
    of the router, so every step of a turn acts on the same decision."""

    intent: str
    handoff: str | None = None
    order_tool: bool = False
    score: float | None = None  # the classifier's P(strong); None when routing by rules only
    threshold: float | None = None
    light_path: bool = True  # False: the full model answers where the light path could (baselines, tests)

    def settle(self, *, light_answer: bool = False, tool_answer: bool = False) -> RouteDecision:
        """``light_answer``: the KG/FAQ has a direct answer; ``tool_answer``: an order tool answered."""
        intent = self.intent
        if self.handoff is not None:
            return RouteDecision("handoff", self.handoff, intent)
        if not self.light_path:
            return RouteDecision("full", "light path off", intent, self.score)
        if tool_answer:
            return RouteDecision("light", "order tool", intent)
        if light_answer:  # the shop's data settles every question of the turn: a model would only say it again,
            if self.score is None:  # and may say it wrong (facts come from the shop, never from weights)
                return RouteDecision("light", "KG answer (rules)" if label_for_intent(intent) == 0
                                     else "KG answer settles the turn", intent)
            return RouteDecision("light", "classifier: light + KG answer" if self.score < self.threshold
                                 else "KG answer settles the turn", intent, self.score)
        if self.score is not None:
            return RouteDecision("full", "classifier: strong" if self.score >= self.threshold
                                 else "no direct answer", intent, self.score)
        return RouteDecision("full", "no direct answer", intent)


class Router:
    """Turns rules + classifier into a per-turn decision."""

    def __init__(self, model: RouterModel | None = None, handoff_after_failures: int = 2, *,
                 light_path: bool = True):
        """``light_path=False``: every turn that is not handed off goes to the model, also where the shop's data
        could answer (the model measured through serving, its prompt seen: baselines and tests)."""
        self.model = model
        self.handoff_after_failures = handoff_after_failures
        self.light_path = light_path

    def intent(self, text: str) -> str:
        """The turn's intent: the keyword rules for handoff/complaint (and without a classifier), else the
        classifier's."""
        explicit = guess_intent(text)
        if explicit in ("human_handoff", "complaint") or self.model is None:
            return explicit
        return self.model.intent(text)

    @staticmethod
    def is_failure_signal(text: str) -> bool:
        """The customer says the last answer did not help (counts towards a handoff)."""
        return bool(FAILURE.search(simplify(text)))

    @staticmethod
    def wants_order_tool(text: str, known_order: str | None) -> bool:
        """The turn names an order number, or asks about orders/logistics while the session knows one."""
        text = simplify(text)
        return bool(order_numbers(text)) or (known_order is not None and bool(ORDERY.search(text)))

    def route(self, text: str, *, failures: int = 0, known_order: str | None = None,
              intent: str | None = None) -> Route:
        """The turn's ``Route``: rules first (explicit request, anger, ``failures`` failed turns -> human), then the
        classifier's score; ``known_order`` is the session's last order number (a follow-up may mean that order)."""
        intent = intent or self.intent(text)
        simple = simplify(text)
        if EXPLICIT_HANDOFF.search(simple):
            return Route(intent, "explicit request")
        if ANGER.search(simple):
            return Route(intent, "complaint/anger signal")
        if failures >= self.handoff_after_failures:
            return Route(intent, f"{failures} failed turns")
        order_tool = self.wants_order_tool(text, known_order)
        if self.model is None:
            return Route(intent, order_tool=order_tool, light_path=self.light_path)
        return Route(intent, order_tool=order_tool, score=self.model.analyse(text)[0],
                     threshold=self.model.threshold, light_path=self.light_path)

    def decide(self, text: str, *, failures: int = 0, light_answer: bool = False, tool_answer: bool = False,
               intent: str | None = None) -> RouteDecision:
        """``route`` and ``settle`` at once, for callers that already know the answers (evaluation, tests)."""
        return self.route(text, failures=failures, intent=intent).settle(light_answer=light_answer,
                                                                         tool_answer=tool_answer)


__all__ = ["Router", "RouterModel", "Route", "RouteDecision", "guess_intent", "load_training_turns", "evaluate",
           "quality_curve", "default_router_path", "LIGHT_INTENTS", "normalise"]
