// Package operators tests what operators see of a running blockd: the
// metrics endpoint under load and the logs that follow a job by its
// uuid. It is a package of its own so that its long scrape-under-load
// test runs beside tests/qmp's rather than after them.
package operators

import (
	"testing"

	qmptest "blockd/tests/qmp"
)

var blockdBin string

func TestMain(m *testing.M) { qmptest.RunWithBlockd(m, &blockdBin) }
