"""The command lifecycle: a command submitted, queued, run by its handler, finished, read back.

What each module owns (the arrows are the only imports between them):

``service.py``  ``Commands``, what the rest of the bus and the API call: submit (one, a batch,
                an eager command), nested ``bus.execute``, get/list, wait, cancel; recovery of
                the queue after a restart (``start``), shutdown (``stop``), a session's end.
                -> runner, records, jobs, execution, waiting, queueview, deps, retries,
                recovery, remote
``recovery.py`` ``Recovery`` (a mixin of ``Commands``): the queue back from the store after a
                restart, or for a session taken over from another node (bus/cluster.py).
``remote.py``   ``wait_in_store``, ``Changes``: following a command another node runs.
``runner.py``   ``Runner``: per-session priority queues, one command at a time per session,
                running a handler (``invoke``), recording its end (``finish``), buffered events
                (``flush``), cancellation. -> batches, eager, records, jobs, execution, runner_waits
``runner_waits.py`` ``Waiting`` (a mixin of ``Runner``): waiting for its jobs, the shutdown
                drain, giving up the commands of a session another node took over.
``waiting.py``  ``CommandWaits``: waiting for commands of any session until they reach a
                status (``POST /api/commands/wait``), woken by the runner and the event log.
                -> records
``queueview.py`` ``QueueWatch``: the live queue across sessions (``GET /api/commands``), from
                the runner's memory and the ``sources`` the modules below register.
``deps.py``     ``Dependencies``: commands submitted with ``after`` are stored ``blocked`` and
                kept here (never in the runner) until their dependencies ended, then queued or
                cancelled (``dependency_failed``). -> records, jobs (and the runner's ``track``,
                ``push``, ``durable_write``)
``retries.py``  ``Retries``: a failed attempt of a single command retried after a delay (the
                runner's one hook, ``Runner.retry``), the due time stored; dead letters and
                running finished commands again (``rerun``). -> retry_policy, records, jobs
``retry_policy.py`` ``RetryPolicy``, ``parse_policy``: ``metadata.retries/backoff/retry_on``.
``batches.py``  ``run_batch``: a batch's members, sequential or parallel (calls the Runner).
                -> batchset
``batchset.py`` ``run_set``: a batch whose handlers are all eager, run in a tight loop and
                stored in chunks (one statement per table, one transaction each).
``eager.py``    ``begin_eager``, ``Resume``, ``is_admitted``, ``is_refused``: a command run before its
                submission has committed.
``execution.py`` ``Execution``, ``CURRENT``, ``current()``: the running handler's context
                (what engines and user code use to publish events).
``records.py``  the store side: ``CommandSpec`` and ``validate``, the ``commands`` rows
                (``insert_command``, ``start_rows``, ``finish_row``, ``row_to_command``,
                ``command_row``, ``batch_rows``; ``command_rows``: a new command's rows for
                the store to insert, store/rows.py) and event data. Runs in the store's
                transactions; touches no memory.
``durable.py``  ``durable_write``: a write retried until it commits (the runner's results).
``jobs.py``     the in-memory types: ``Job``, ``BatchJob``, ``Outcome``, ``SessionQueue``,
                ``NotAdmitted`` and the outcome builders (``command_error``,
                ``cancelled_outcome``, ``failed_outcome``).

The internal API between modules is the public names above and these ``Runner`` methods and
attributes: ``jobs``, ``queues``, ``stopping``; ``try_claim``, ``release_claim``, ``track``,
``push``, ``run_claimed``, ``run_eager``, ``queue_waited``; ``start_jobs``, ``invoke``,
``run_inline``, ``finish``, ``apply_end``, ``end_unstarted``, ``flush``, ``durable_write``;
``cancel_running``, ``cancel_queued``, ``wait``, ``draining``, ``drain``, ``stop``; ``retry``. A name with a leading
underscore is private to its module: no other module calls it.

Outside this package, import from here (``llmgine_daemon.bus.commands``), not from the
modules: that is the package's API to the rest of the daemon.
"""

from llmgine_daemon.bus.commands.execution import CURRENT, Execution, current
from llmgine_daemon.bus.commands.records import ACTIVE, MAX_TIMEOUT_S, CommandSpec, command_depth, validate
from llmgine_daemon.bus.commands.service import Commands

__all__ = [
    "ACTIVE",
    "CURRENT",
    "MAX_TIMEOUT_S",
    "CommandSpec",
    "Commands",
    "Execution",
    "command_depth",
    "current",
    "validate",
]
