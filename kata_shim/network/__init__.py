"""Pod networking on the host: the pod netns's interfaces carried into the VM.

netns      run a function inside a network namespace (a thread that setns()es)
netlink    the typed wrapper over pyroute2 (links, addresses, routes, neighbours, tc)
discovery  the OCI spec's netns path and what CNI put in it
models     internetworking models: tcfilter (default), macvtap, none
agentmsg   discovered state -> the agent's types.Interface / Route / ARPNeighbor
plumbing   prepare (discover + plumb), configure the guest through the agent, teardown
record     the plumbing as JSON, for teardown by a restarted shim
"""
