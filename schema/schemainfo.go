package schema

// The SchemaInfo types of qapi/introspect.json, declared with this
// package's own tags so that query-qmp-schema describes itself the way
// QEMU's does (a flat union on meta-type).

// SchemaMetaType is the discriminator of SchemaInfo.
type SchemaMetaType string

// EnumValues implements the enum marker.
func (SchemaMetaType) EnumValues() []string {
	return []string{"builtin", "enum", "array", "object", "alternate", "command", "event"}
}

// JSONType is the JSON type of a builtin.
type JSONType string

// EnumValues implements the enum marker.
func (JSONType) EnumValues() []string {
	return []string{"string", "number", "int", "boolean", "null", "object", "array", "value"}
}

// SchemaInfo is one entity of query-qmp-schema.
type SchemaInfo struct {
	Name     string         `qapi:"name"`
	MetaType SchemaMetaType `qapi:"meta-type,discriminator"`
	Features []string       `qapi:"features,optional"`

	Builtin   *SchemaInfoBuiltin   `qapi:",variant=builtin"`
	Enum      *SchemaInfoEnum      `qapi:",variant=enum"`
	Array     *SchemaInfoArray     `qapi:",variant=array"`
	Object    *SchemaInfoObject    `qapi:",variant=object"`
	Alternate *SchemaInfoAlternate `qapi:",variant=alternate"`
	Command   *SchemaInfoCommand   `qapi:",variant=command"`
	Event     *SchemaInfoEvent     `qapi:",variant=event"`
}

// SchemaInfoBuiltin describes a builtin type.
type SchemaInfoBuiltin struct {
	JSONType JSONType `qapi:"json-type"`
}

// SchemaInfoEnum describes an enum. Values is the deprecated flat list
// QEMU 7.2 still sends next to Members.
type SchemaInfoEnum struct {
	Members []SchemaInfoEnumMember `qapi:"members"`
	Values  []string               `qapi:"values,features=deprecated"`
}

// SchemaInfoEnumMember is one enum value.
type SchemaInfoEnumMember struct {
	Name     string   `qapi:"name"`
	Features []string `qapi:"features,optional"`
}

// SchemaInfoArray describes an array type "[ELEM]".
type SchemaInfoArray struct {
	ElementType string `qapi:"element-type"`
}

// SchemaInfoObject describes a struct or a flat union.
type SchemaInfoObject struct {
	Members  []SchemaInfoObjectMember  `qapi:"members"`
	Tag      *string                   `qapi:"tag,optional"`
	Variants []SchemaInfoObjectVariant `qapi:"variants,optional"`
}

// SchemaInfoObjectMember is one member; optional members carry
// "default": null, as in QEMU.
type SchemaInfoObjectMember struct {
	Name     string   `qapi:"name"`
	Type     string   `qapi:"type"`
	Default  Any      `qapi:"default,optional"`
	Features []string `qapi:"features,optional"`
}

// SchemaInfoObjectVariant maps a discriminator value to a variant type.
type SchemaInfoObjectVariant struct {
	Case string `qapi:"case"`
	Type string `qapi:"type"`
}

// SchemaInfoAlternate describes an alternate.
type SchemaInfoAlternate struct {
	Members []SchemaInfoAlternateMember `qapi:"members"`
}

// SchemaInfoAlternateMember is one branch of an alternate.
type SchemaInfoAlternateMember struct {
	Type string `qapi:"type"`
}

// SchemaInfoCommand describes a command.
type SchemaInfoCommand struct {
	ArgType  string `qapi:"arg-type"`
	RetType  string `qapi:"ret-type"`
	AllowOOB *bool  `qapi:"allow-oob,optional"`
}

// SchemaInfoEvent describes an event.
type SchemaInfoEvent struct {
	ArgType string `qapi:"arg-type"`
}

// CommandInfo is one element of query-commands.
type CommandInfo struct {
	Name string `qapi:"name"`
}
