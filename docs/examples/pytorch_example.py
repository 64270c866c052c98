"""A plain PyTorch loop with trainmon: metrics, gradient norms and histograms (watch), a checkpoint.

Settings come from the environment (TRAINMON_API_URL, ...). Run: python docs/examples/pytorch_example.py
"""

import torch
from trainmon.exporter import TrainingMonitor
from trainmon.integrations.torch import watch

if __name__ == "__main__":
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with TrainingMonitor("pytorch-example", params={"lr": 0.05, "hidden": 16}) as monitor:
        with watch(monitor, model, every=10):  # gradient norms and histograms every 10 steps
            for step in range(40):
                x = torch.randn(32, 8)
                loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                monitor.log_metrics({"train/loss": loss.item()}, step)
        monitor.save_checkpoint(model, step=step)
    # leaving the `with` block finishes the run: COMPLETED, or FAILED when an exception escaped
