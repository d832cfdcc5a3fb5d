"""xnet.lit.callbacks: what the training callbacks log."""

from types import SimpleNamespace

import torch

from xnet.lit.callbacks import GradNormLog


class Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
        self.logged: dict[str, float] = {}

    def log(self, key: str, value: torch.Tensor) -> None:
        self.logged[key] = float(value)


def test_grad_norm_is_the_l2_norm_of_all_gradients_on_logged_steps_only():
    module = Recorder()
    module.a.grad, module.b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # `frozen` has none
    GradNormLog().on_before_optimizer_step(SimpleNamespace(global_step=100, log_every_n_steps=50), module, None)
    assert module.logged == {"train/grad_norm": 5.0}
    module.logged.clear()
    GradNormLog().on_before_optimizer_step(SimpleNamespace(global_step=101, log_every_n_steps=50), module, None)
    assert module.logged == {}
