package objects

// authzInst is an authz-simple object: the one identity it lets in,
// changeable with qom-set (read under the registry's lock).
type authzInst struct{ identity *string }

func init() {
	RegisterClass(&Class{Name: "authz", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"}})
	RegisterClass(&Class{Name: "authz-simple", Parent: "authz",
		Props: []Property{strProp("identity", func(inst any) **string { return &inst.(*authzInst).identity })},
		Init: func(o *ObjectOptions) (any, error) {
			a := &authzInst{}
			if o.AuthzSimple != nil { // identity is required: decoding checked it
				id := o.AuthzSimple.Identity
				a.identity = &id
			}
			return a, nil
		},
	})
}
