"""Fine-tuned digital representatives: deliberation data, leak-free splits,
LoRA training and evaluation (vanilla vs fine-tuned)."""
