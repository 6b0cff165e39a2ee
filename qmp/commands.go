package qmp

import (
	"context"
	"slices"

	"blockd/schema"
)

// QMPCapability is a capability a client can enable during negotiation.
type QMPCapability string

// EnumValues lists the capabilities blockd offers.
func (QMPCapability) EnumValues() []string { return []string{"oob"} }

// CapabilitiesArgs are qmp_capabilities' arguments.
type CapabilitiesArgs struct {
	Enable []QMPCapability `qapi:"enable,optional"`
}

// RegisterCommands declares the commands the protocol layer implements.
func RegisterCommands(r *schema.Registry) {
	schema.Define(r, "qmp_capabilities", func(ctx context.Context, a *CapabilitiesArgs) (schema.Empty, error) {
		s := SessionFrom(ctx)
		if s == nil || s.negotiated {
			return schema.Empty{}, schema.ClassErrorf(schema.ClassCommandNotFound,
				"Capabilities negotiation is already complete, command ignored")
		}
		s.Negotiate(slices.Contains(a.Enable, "oob"))
		return schema.Empty{}, nil
	})
}
