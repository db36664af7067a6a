import signal
import sys

# A worker its supervisor retires while it is still importing (a recycle right at
# start, or the supervisor stopping) exits cleanly: it has taken no work yet. The
# runner installs its graceful handlers once the event loop runs.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

from .cli import main  # noqa: E402  (after the handler: importing gRPC takes a while)

signal.signal(signal.SIGTERM, signal.SIG_DFL)  # client verbs die by SIGTERM as usual; `run` sets its own

sys.exit(main())
