"""One process-wide lock around forward-mode AD (``torch.func.jvp`` and what is built on it).

torch keeps forward AD's state per process, not per thread: one dual level may exist at a time
(C++: "Nested forward mode AD is not supported at the moment"), the current level is a module global
(``torch.autograd.forward_ad._current_level``), and ``torch.func.jvp`` enters that level only when
another module global, ``torch._functorch.eager_transforms.JVP_NESTING``, reads 1. Two threads inside
jvp at once thus see each other's count, skip entering the level or exit it under the other (issue 21:
"no level exists", "a forward AD level with an invalid index"), and a tangent cleared by the other
thread's exit would be unpacked as zeros (a silently wrong column).

So every forward-AD use in loupe holds ``FORWARD_AD`` while it runs (``jacobian.training_jacobian``
is the only one). That is complete because nothing else in the process enters forward AD: kronfluence
and transformers use reverse mode only, and ``layer_jacobian.jacobian`` is reverse mode over the
legacy vmap, whose nesting state (like functorch's grad/vmap levels) is thread-local in C++. Reentrant,
so a jvp nested in the same thread (which functorch supports) takes it again.
"""

from __future__ import annotations

import threading

FORWARD_AD = threading.RLock()
