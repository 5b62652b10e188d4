//go:build race

package relay

// raceEnabled: the race detector multiplies memory, so memory figures are
// not measured under it.
const raceEnabled = true
