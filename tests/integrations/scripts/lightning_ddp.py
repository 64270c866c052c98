"""Two CPU ranks with gloo: Lightning's own DDP launcher (strategy="ddp", devices=2) starts rank 1 by running this
script again; both ranks join one trainmon run (tests/integrations/test_lightning.py)."""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset
from trainmon.integrations.lightning import TrainmonLogger


class Regressor(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False,
                        logger=TrainmonLogger("lightning-ddp", finish_on_end=True),
                        callbacks=[ModelCheckpoint(save_top_k=-1, every_n_epochs=1)])
    trainer.fit(Regressor(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16))
