"""keycafe's own Python cluster client: sync (``Cluster``) and trio (``open_cluster``).

    import keycafe

    with keycafe.Cluster("127.0.0.1:9814") as kc:
        kc.set("greeting", "hello")
        kc.get("greeting")            # b"hello"

Both bootstrap from any seed node, route each key to its slot's owner, follow
MOVED/ASK, and retry TRYAGAIN/CLUSTERDOWN/lost connections with jittered
backoff until ``retry_deadline``; errors are ``keycafe.KeycafeError``s.
"""

from __future__ import annotations

from keycafe.client.commands import NodeInfo
from keycafe.client.sync import Cluster, Pipeline
from keycafe.client.trio_client import TrioCluster, TrioPipeline, open_cluster

__all__ = ["Cluster", "NodeInfo", "Pipeline", "TrioCluster", "TrioPipeline", "open_cluster"]
