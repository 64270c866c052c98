"""Lightning with trainmon: a small regression module on random tensors, checkpoints by ModelCheckpoint.

Settings come from the environment (TRAINMON_API_URL, ...). Run: python docs/examples/lightning_example.py
"""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset
from trainmon.integrations.lightning import TrainmonLogger


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()  # -> the run's params
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)  # -> metric train_loss at Lightning's step
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(samples: int) -> DataLoader:
    x = torch.randn(samples, 8)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)


if __name__ == "__main__":
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", log_every_n_steps=1, enable_progress_bar=False,
        logger=TrainmonLogger("lightning-example"),  # the one line
        callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)])
    trainer.fit(Regressor(), loader(256), loader(64))
    # The run finishes COMPLETED when the process exits (FAILED if training raised); a trainer.test() here would
    # still be recorded. TrainmonLogger(..., finish_on_end=True) finishes it at the end of fit instead.
