package process

// The OTLP trace exporter's grpc imports google.golang.org/genproto/googleapis/rpc,
// a module since split out of google.golang.org/genproto, while Pebble's
// cockroachdb/errors still requires a genproto from before the split that
// holds the same packages: the build sees them twice ("ambiguous import")
// unless a post-split genproto is selected. Importing one of its packages
// keeps `go mod tidy` from dropping that requirement.
import _ "google.golang.org/genproto/protobuf/field_mask"
