// Package schema owns blockd's command surface as data: every QMP command
// and event with its argument and return types, the strict decoding of
// arguments with QEMU's error texts, the encoding of return values, and
// the introspection (query-commands, query-qmp-schema) generated from the
// same declarations so that they cannot drift apart.
//
// QAPI types are declared as Go types:
//
//   - struct: fields tagged `qapi:"name"` or `qapi:"name,optional"`
//     (optional fields are pointers, slices or maps; nil is absent);
//     untagged fields are not on the wire; embedded structs are bases
//     whose members come first; `features=a|b` adds member features;
//   - enum: a string type with EnumValues() []string;
//   - flat union: a struct with an enum member tagged
//     `qapi:"driver,discriminator"` and *Struct fields tagged
//     `qapi:",variant=file"` (or `variant=file|host_device`);
//   - alternate: a struct with an Alternate() method and one pointer
//     field per branch, chosen by the JSON kind;
//   - builtins: string, bool, int/int64 ('int'), int8..int32,
//     uint8..uint64, Size, float64 ('number'), Any ('any', raw JSON),
//     Null, slices (arrays); interfaces and maps also carry 'any'.
//
// QAPIName() string renames a type (alternate names appear in error
// texts); QAPIFeatures() []string and EnumFeatures() add features.
package schema

import "errors"

func asErr(err error, target any) bool { return errors.As(err, target) }
