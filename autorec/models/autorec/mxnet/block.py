"""The AutoRec network as a Gluon ``Block``, and its sparse encoder.

Two paths, one objective: ``path="dense"`` feeds densified batches through ``forward`` (the D2L
seed's formulation); ``path="sparse"`` keeps the batch an ``mx.nd.sparse.csr_matrix``: the encoder
is ``mx.nd.sparse.dot(X, W0^T)`` (the csr x dense kernel, O(nnz * h)), the middle layers are dense
``(b, h)``, and the decoder is evaluated at the observed entries only (decoder rows gathered with
``nd.take(W_L, cols)``, hidden rows with ``nd.take(h, local_row)``, a row-wise dot, plus the bias
taken at those columns).  No ``(b, n_in)`` array is built on the sparse path.

What did not work in MXNet 1.9.1, and why the encoder is written as it is:

- ``mx.nd.sparse.dot(csr, weight, transpose_b=True)`` (the obvious form, weight stored (out, in))
  has no sparse kernel: MXNet logs "Storage type fallback detected: operator = dot, input storage
  types = [csr, default, ], output storage types = [default, ], params = {"transpose_b" : True, }
  ... Temporary dense ndarrays are generated in order to execute the operator", i.e. it densifies
  the CSR batch, and its backward (``_backward_dot`` with ``[default, csr, default]``) falls back
  likewise.  The kernels that exist on CPU are ``dot(csr, default) -> default`` and
  ``dot(csr.T, default) -> row_sparse``.
- Under autograd, ``dot(csr, W.T)`` (``W.T`` via ``nd.transpose``) runs the sparse forward kernel;
  its backward produces a ``row_sparse`` gradient for ``W.T`` and then ``transpose`` of that
  ``row_sparse`` array falls back to dense (another "Storage type fallback" log line).  The
  gradient of a ``Dense`` weight is dense anyway (``grad_stype='default'``), so the encoder is a
  small ``autograd.Function`` (:class:`CsrTimesWT`): forward ``dot(X, transpose(W))``, backward
  ``transpose(dot(X, dY, transpose_a=True).tostype('default'))``: sparse kernels both ways, the
  gradient densified once, explicitly, and no fallback.
- A ``row_sparse`` weight gradient (``grad_stype='row_sparse'``) is deliberately not used: Gluon's
  Adam/SGD then default to *lazy* updates (moments and weight decay applied only to rows present in
  the batch), which is a different optimizer than the dense path's and torch's.
- MXNet 1.9.1 has no sampled dense-dense matmul (torch's ``sampled_addmm``), so the decoder at the
  observed entries gathers ``(nnz, h)`` arrays (hidden rows and decoder rows) and autograd keeps
  them for backward (``take``'s backward is a scatter-add): memory O(nnz_batch * h), and it is
  memory-bound.  A custom ``autograd.Function`` that avoids the gathers in backward (``dh = D @ W``,
  ``dW = D^T @ h`` with ``D`` the CSR matrix of the incoming gradient) does not work: building ``D``
  inside ``backward`` with ``mx.nd.sparse.csr_matrix((dz, cols, indptr), ...)`` goes through
  ``MXNDArraySyncCopyFromNDArray`` and deadlocks the engine (the next ``asscalar()`` never
  returns), since a Function's backward runs inside the engine.
"""

from __future__ import annotations

from typing import Any

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import nn

#: MXNet generates its operators at import time; to a type checker they are untyped
nd: Any = mx.nd


def activation(name: str, x: Any) -> Any:
    """The activations of :mod:`autorec.models.autorec.config` with torch's definitions (elu with
    alpha 1; MXNet's LeakyReLU elu defaults to slope 0.25)."""
    if name == "sigmoid":
        return nd.sigmoid(x)
    if name == "relu":
        return nd.relu(x)
    if name == "tanh":
        return nd.tanh(x)
    if name == "elu":
        return nd.LeakyReLU(x, act_type="elu", slope=1.0)
    if name == "selu":
        # scale * elu(x, alpha), not LeakyReLU(act_type="selu"): MXNet 1.9.1's selu backward is wrong
        # for negative inputs (0.0028 at x = -3 where the derivative is 0.0875)
        return nd.LeakyReLU(x, act_type="elu", slope=_SELU_ALPHA) * _SELU_SCALE
    return x  # identity


#: torch.nn.functional.selu's constants
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class CsrTimesWT(autograd.Function):
    """``X @ W.T`` for a CSR ``X`` (b, n_in) and a dense ``W`` (out, n_in), with sparse kernels in
    both directions (see the module docstring for why ``dot(X, W, transpose_b=True)`` is not used)."""

    def __init__(self, x_csr: Any) -> None:
        super().__init__()
        self.x = x_csr

    def forward(self, w: Any) -> Any:
        return nd.sparse.dot(self.x, nd.transpose(w))

    def backward(self, dy: Any) -> Any:
        g = nd.sparse.dot(self.x, dy, transpose_a=True)  # (n_in, out), row_sparse on CPU
        if g.stype != "default":
            g = g.tostype("default")
        return nd.transpose(g)


class AutoRecBlock(gluon.Block):
    """The encoder-decoder stack ``sizes = [n_in, *hidden, n_in]`` (``layers[k]`` holds ``W{k}, b{k}``
    as an ``nn.Dense(sizes[k+1], in_units=sizes[k])``)."""

    def __init__(self, sizes: list[int], activations: list[str], dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes = list(sizes)
        self.activations = list(activations)
        self.rate = float(dropout)
        with self.name_scope():
            self.layers: Any = nn.Sequential()  # nn.Dense per layer
            for k in range(len(sizes) - 1):
                self.layers.add(nn.Dense(sizes[k + 1], in_units=sizes[k], flatten=False))
            self.dropout = nn.Dropout(self.rate) if self.rate > 0 else None

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def _hidden_tail(self, z0: Any) -> Any:
        h = activation(self.activations[0], z0)
        if self.dropout is not None:
            h = self.dropout(h)
        for k in range(1, self.n_layers - 1):
            h = activation(self.activations[k], self.layers[k](h))
            if self.dropout is not None:
                h = self.dropout(h)
        return h

    def forward(self, x: Any) -> Any:
        """The full reconstruction ``(b, n_in)`` of a dense batch (dropout only in training mode)."""
        h = self._hidden_tail(self.layers[0](x))
        return activation(self.activations[-1], self.layers[self.n_layers - 1](h))

    def hidden_sparse(self, x_csr: Any, ctx: Any) -> Any:
        """The last hidden representation of a CSR batch: ``X @ W0^T + b0`` first."""
        first = self.layers[0]
        z0 = CsrTimesWT(x_csr)(first.weight.data(ctx))
        z0 = nd.broadcast_add(z0, first.bias.data(ctx).reshape((1, -1)))
        return self._hidden_tail(z0)

    def decode_pairs(self, h: Any, local: Any, cols: Any, ctx: Any) -> Any:
        """Outputs at (row of ``h``, column) pairs: the row-wise dot of gathered hidden rows and
        gathered decoder rows, plus the decoder bias at those columns."""
        last = self.layers[self.n_layers - 1]
        z = nd.sum(nd.take(h, local) * nd.take(last.weight.data(ctx), cols), axis=1)
        return activation(self.activations[-1], z + nd.take(last.bias.data(ctx), cols))

    def full_from_hidden(self, h: Any) -> Any:
        """The full ``(rows, n_in)`` output from hidden representations."""
        last = self.layers[self.n_layers - 1]
        return activation(self.activations[-1], last(h))
