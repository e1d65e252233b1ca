"""`lipsync serve --cluster ray`: the same server run as a Ray Serve application (design.md section 18).

Two Serve applications on one proxy: `lipsync-live` at `/v1/live`, whose replicas are one runtime on one
device each and hold the live sessions (Serve routes a new WebSocket to a replica with room), and `lipsync` at
`/`, one light replica with the page, the characters, health, readiness and the metrics of every replica. A
small actor, the hub, carries what the replicas share: the characters' files, each replica's report (sessions,
capacity, metrics) and the order to drain. Nothing here imports Ray at module level except `replicas.py`,
which is only imported where Ray is installed.
"""
