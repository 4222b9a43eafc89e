//go:build tools

// Package tools pins Headscale 0.25, the last release with the older route API (/api/v1/routes).
package tools

import (
	_ "github.com/juanfont/headscale/cmd/headscale"
)
