import os

import torch

# Without a GPU the kernels run in Triton's interpreter; it must be on before triton.jit runs.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
