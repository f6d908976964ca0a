module github.com/hookstream/hookstream/services/evaluator

go 1.26.0

replace (
	github.com/hookstream/hookstream/pkg => ../../pkg
	github.com/hookstream/hookstream/proto => ../../proto
)
