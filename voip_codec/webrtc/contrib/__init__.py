"""What a call does not need but tests, demos and local setups do: the UDP impairment relay
(:mod:`.relay`), loopback ICE candidates (:mod:`.loopback`) and sound-card tracks
(:mod:`.devices`)."""
