"""Model lifecycle on the line (issue 13): a versioned store with a per-station pointer, signed cards,
shadow runs, promotion between two frames, rollback (by command or by the guard), the local control
channel, and the systemd notify protocol. See docs/deploy.md and docs/contracts.md."""
