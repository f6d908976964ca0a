module github.com/hookstream/hookstream/services/hookstream

go 1.26.0

replace (
	github.com/hookstream/hookstream/pkg => ../../pkg
	github.com/hookstream/hookstream/proto => ../../proto
)

replace (
	github.com/hookstream/hookstream/services/dispatcher => ../dispatcher
	github.com/hookstream/hookstream/services/evaluator => ../evaluator
	github.com/hookstream/hookstream/services/ingest => ../ingest
	github.com/hookstream/hookstream/services/timer => ../timer
)
