"""Hugging Face Trainer with trainmon: a tiny GPT-2 built from its config (no download) on random tokens.

Settings come from the environment (TRAINMON_API_URL, ...). Run: python docs/examples/huggingface_example.py
"""

import torch
from trainmon.integrations.huggingface import TrainmonCallback
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, samples: int, length: int = 16, vocab: int = 64):
        self.ids = torch.randint(0, vocab, (samples, length), generator=torch.Generator().manual_seed(samples))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


if __name__ == "__main__":
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir="hf-output", run_name="gpt2-tiny", max_steps=8, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, eval_strategy="steps", eval_steps=4, save_steps=4,
        use_cpu=True, report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(64), eval_dataset=RandomTokens(16),
                      callbacks=[TrainmonCallback()])  # the one line
    trainer.train()
