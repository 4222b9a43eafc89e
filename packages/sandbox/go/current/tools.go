//go:build tools

// Package tools pins the daemons the tests run against: tailscaled, tailscale and derper from
// tailscale.com, and the current Headscale. Nothing here is linked into containerscale.
package tools

import (
	_ "github.com/juanfont/headscale/cmd/headscale"
	_ "tailscale.com/cmd/derper"
	_ "tailscale.com/cmd/tailscale"
	_ "tailscale.com/cmd/tailscaled"
)
