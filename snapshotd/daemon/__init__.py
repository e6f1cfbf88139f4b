"""The snapshotd service: a daemon per node that snapshots registered process
trees on schedule (APScheduler) and rolls jobs back on demand, behind an
authorized unix-socket API.

  protocol.py   wire format (JSON lines), the client, durations
  auth.py       who is calling (SO_PEERCRED) and what they may touch
  service.py    registrations, rounds on schedule, retention, the verbs
  rollback.py   kill a job's processes, cut its output files, restore a round
  server.py     the socket server and the daemon's life (start, SIGTERM)
"""
