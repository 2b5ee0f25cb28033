"""Fine-tuning the default pair's LoRA adapters (training/finetune.py)."""
