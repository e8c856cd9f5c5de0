"""Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("kefu_requests", "Requests by route and path chosen", ["route", "path", "status"],
                                registry=r)
        self.latency = Histogram("kefu_request_latency_seconds", "End-to-end latency", ["route", "path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kefu_time_to_first_token_seconds", "Time to the first streamed piece", ["path"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("kefu_cache_hits", "Response cache hits", registry=r)
        self.cache_misses = Counter("kefu_cache_misses", "Response cache misses", registry=r)
        self.engine_errors = Counter("kefu_engine_errors", "Engine failures (answered by fallback)", ["engine"],
                                     registry=r)
        self.handoffs = Counter("kefu_handoffs", "Turns handed to a human", ["reason"], registry=r)
        self.injections = Counter("kefu_injection_refusals", "Turns refused by the prompt-injection guard",
                                  registry=r)
        self.rate_limited = Counter("kefu_rate_limited", "Requests refused by the rate limiter", registry=r)
        self.compliance_fixes = Counter("kefu_compliance_fixes", "Violations rewritten by the compliance filter",
                                        registry=r)
        self.grounding_fixes = Counter("kefu_grounding_fixes", "Draft statements corrected from facts/tools",
                                       registry=r)
        self.verification_failures = Counter("kefu_verification_failures",
                                             "Model drafts that failed verification, by the first reason",
                                             ["reason"], registry=r)
        self.shed = Counter("kefu_shed_requests", "Model turns answered from the light path or handed off because "
                            "the model queue was over budget", ["reason"], registry=r)
        self.aborted = Counter("kefu_aborted_requests", "Model generations stopped before their end (deadline, "
                               "client gone)", ["reason"], registry=r)
        self.model_turns = Gauge("kefu_model_requests_in_flight", "Turns on the model path now (running and waiting "
                                 "in the engine)", registry=r)
        self.prompt_tokens = Counter("kefu_prompt_tokens", "Prompt tokens of model answers (engine counts)", registry=r)
        self.generation_tokens = Counter("kefu_generation_tokens", "Tokens the model generated", registry=r)
        self.time_per_output_token = Histogram("kefu_time_per_output_token_seconds", "Seconds per generated token "
                                               "after the first", registry=r,
                                               buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0))
        self.finish_reasons = Counter("kefu_request_finish_reasons", "Why model answers ended (stop, length)",
                                      ["reason"], registry=r)
        self.replacements = Counter("kefu_replacements", "Replies replaced after verification failed twice "
                                    "(by the light-path answer or a handoff), by reason", ["reason"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
