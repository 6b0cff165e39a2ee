package schema

import "reflect"

// transaction's arguments (QEMU 7.2's transaction.json). The union lists
// the action types blockd implements, in QEMU's order; an action type is
// added with one enum value, one wrapper and one variant field here and
// one registration of its steps (blockcore.RegisterAction). A type that
// is not listed is refused by the decoder as QEMU refuses an unknown one
// ("Parameter 'type' does not accept value 'x'").

// TransactionActionKind is an action's type.
type TransactionActionKind string

func (TransactionActionKind) EnumValues() []string {
	return []string{"abort", "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
		"block-dirty-bitmap-clear", "block-dirty-bitmap-enable", "block-dirty-bitmap-disable",
		"block-dirty-bitmap-merge", "blockdev-backup", "blockdev-snapshot",
		"blockdev-snapshot-internal-sync", "blockdev-snapshot-sync", "drive-backup"}
}

// TransactionAction is one action: {"type": kind, "data": {...}}.
type TransactionAction struct {
	Type TransactionActionKind `qapi:"type,discriminator"`

	Abort                        *AbortWrapper                    `qapi:",variant=abort"`
	BlockDirtyBitmapAdd          *BlockDirtyBitmapAddWrapper      `qapi:",variant=block-dirty-bitmap-add"`
	BlockDirtyBitmapRemove       *BlockDirtyBitmapWrapper         `qapi:",variant=block-dirty-bitmap-remove"`
	BlockDirtyBitmapClear        *BlockDirtyBitmapWrapper         `qapi:",variant=block-dirty-bitmap-clear"`
	BlockDirtyBitmapEnable       *BlockDirtyBitmapWrapper         `qapi:",variant=block-dirty-bitmap-enable"`
	BlockDirtyBitmapDisable      *BlockDirtyBitmapWrapper         `qapi:",variant=block-dirty-bitmap-disable"`
	BlockDirtyBitmapMerge        *BlockDirtyBitmapMergeWrapper    `qapi:",variant=block-dirty-bitmap-merge"`
	BlockdevBackup               *BlockdevBackupWrapper           `qapi:",variant=blockdev-backup"`
	BlockdevSnapshot             *BlockdevSnapshotWrapper         `qapi:",variant=blockdev-snapshot"`
	BlockdevSnapshotInternalSync *BlockdevSnapshotInternalWrapper `qapi:",variant=blockdev-snapshot-internal-sync"`
	BlockdevSnapshotSync         *BlockdevSnapshotSyncWrapper     `qapi:",variant=blockdev-snapshot-sync"`
	DriveBackup                  *DriveBackupWrapper              `qapi:",variant=drive-backup"`
}

// Data returns a pointer to the decoded data of the action's type (the
// Data member of its wrapper), or nil if the action has no variant.
func (a *TransactionAction) Data() any {
	v := reflect.ValueOf(a).Elem()
	for i := 1; i < v.NumField(); i++ {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			return f.Elem().FieldByName("Data").Addr().Interface()
		}
	}
	return nil
}

// AbortArgs is the abort action's (empty) data.
type AbortArgs struct{}

// The wrappers hold an action's data, as QEMU's *Wrapper types do.
type (
	DriveBackupWrapper struct {
		Data DriveBackupArgs `qapi:"data"`
	}
	AbortWrapper struct {
		Data AbortArgs `qapi:"data"`
	}
	BlockDirtyBitmapAddWrapper struct {
		Data BlockDirtyBitmapAddArgs `qapi:"data"`
	}
	BlockDirtyBitmapWrapper struct {
		Data BlockDirtyBitmap `qapi:"data"`
	}
	BlockDirtyBitmapMergeWrapper struct {
		Data BlockDirtyBitmapMergeArgs `qapi:"data"`
	}
	BlockdevBackupWrapper struct {
		Data BlockdevBackupArgs `qapi:"data"`
	}
	BlockdevSnapshotWrapper struct {
		Data BlockdevSnapshotArgs `qapi:"data"`
	}
	BlockdevSnapshotInternalWrapper struct {
		Data BlockdevSnapshotInternalArgs `qapi:"data"`
	}
	BlockdevSnapshotSyncWrapper struct {
		Data BlockdevSnapshotSyncArgs `qapi:"data"`
	}
)

// ActionCompletionMode says whether the jobs a transaction starts finish
// as a group.
type ActionCompletionMode string

func (ActionCompletionMode) EnumValues() []string { return []string{"individual", "grouped"} }

// TransactionProperties are a transaction's optional properties.
type TransactionProperties struct {
	CompletionMode *ActionCompletionMode `qapi:"completion-mode,optional"`
}

// TransactionArgs are transaction's arguments.
type TransactionArgs struct {
	Actions    []TransactionAction    `qapi:"actions"`
	Properties *TransactionProperties `qapi:"properties,optional"`
}
