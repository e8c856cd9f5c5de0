"""kefu (客服): turn a shop's customer-service chat logs into its own LoRA-tuned model, and run it."""

__version__ = "0.1.0"
