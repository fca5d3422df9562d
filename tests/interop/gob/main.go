// Command gobgolden writes golden.json: gob frames produced by Go's encoding/gob exactly as
// openim-sdk-core (GeneralWsReq, GeneralWsResp) and open-im-server's msggateway (Resp) produce
// them, one fresh gob.Encoder per frame. tests/unit/test_gob.py checks app/core/gob.py against it.
//
// Regenerate (from this folder): go run .   (writes golden.json; Go 1.19 or newer)
//
// gob type ids are allocated per process, in the order types are first seen, not per encoder: the
// first struct type a process encodes gets id 65. So each group below runs in its own child process
// (this program re-executing itself), and the "mixed" group shows what a frame looks like when the
// type is the second one a process has seen (id 66).
package main

import (
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"
)

// GeneralWsReq is openim-sdk-core's request envelope (internal/interaction/ws_resp_asyn.go).
type GeneralWsReq struct {
	ReqIdentifier int    `json:"reqIdentifier"`
	Token         string `json:"token"`
	SendID        string `json:"sendID"`
	OperationID   string `json:"operationID"`
	MsgIncr       string `json:"msgIncr"`
	Data          []byte `json:"data"`
}

// GeneralWsResp is openim-sdk-core's answer envelope (the SDK decodes the gateway's Resp into it).
type GeneralWsResp struct {
	ReqIdentifier int    `json:"reqIdentifier"`
	ErrCode       int    `json:"errCode"`
	ErrMsg        string `json:"errMsg"`
	MsgIncr       string `json:"msgIncr"`
	OperationID   string `json:"operationID"`
	Data          []byte `json:"data"`
}

// Resp is open-im-server's answer and push envelope (internal/msggateway/message_handler.go, v3.8.3).
type Resp struct {
	ReqIdentifier int32  `json:"reqIdentifier"`
	MsgIncr       string `json:"msgIncr"`
	OperationID   string `json:"operationID"`
	ErrCode       int    `json:"errCode"`
	ErrMsg        string `json:"errMsg"`
	Data          []byte `json:"data"`
}

// Inner, Node and Foo only exist to give the "extra" sender fields of many kinds.
type Inner struct {
	X int
	Y string
}

type Node struct {
	V    int
	Next *Node
}

type Foo struct {
	A string
	B []int
}

// ExtraReq is a GeneralWsReq (same type name on the wire) from a sender whose struct has more
// fields than ours, interleaved with the known ones: a decoder must skip every one of them.
type ExtraReq struct {
	ReqIdentifier int
	Flag          bool
	Token         string
	Count         uint64
	Ratio         float64
	SendID        string
	Cplx          complex128
	Tags          []string
	Attrs         map[string]int
	OperationID   string
	Nested        struct {
		A     int
		Items []Inner
	}
	Arr     [3]int16
	Any     interface{}
	AnyFoo  interface{}
	When    time.Time
	MsgIncr string
	Ptr     *int
	List    *Node
	Raw     []uint8
	Matrix  [][]float32
	Data    []byte
	Tail    string
}

type frameCase struct {
	Name   string                 `json:"name"`
	GoType string                 `json:"go_type"`
	Value  map[string]interface{} `json:"value"`
	Hex    string                 `json:"hex"`
}

// encode writes v with a fresh gob.Encoder, as OpenIM does for every frame, then decodes the frame
// with a fresh gob.Decoder into into (the receiver's struct, matched by field name), so the golden
// "value" is what Go itself reads from the frame.
func encode(v interface{}, into interface{}) string {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		panic(err)
	}
	if err := gob.NewDecoder(bytes.NewReader(buf.Bytes())).Decode(into); err != nil {
		panic(err)
	}
	return hex.EncodeToString(buf.Bytes())
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	return b
}

// protobuf bytes of sdkws.MsgData{sendID:"alice", recvID:"bob", clientMsgID:"c1", sessionType:1,
// contentType:101, content:"{\"content\":\"hi\"}"}, hand-encoded.
var msgData = []byte("\x0a\x05alice\x12\x03bob\x22\x02c1\x38\x01\x48\x65\x52\x10{\"content\":\"hi\"}")

func dataValue(b []byte) interface{} {
	if len(b) > 4096 {
		return map[string]int{"pattern_len": len(b)}
	}
	return hex.EncodeToString(b)
}

func reqCase(name string, v interface{}) frameCase {
	var r GeneralWsReq
	h := encode(v, &r)
	return frameCase{name, "GeneralWsReq", map[string]interface{}{
		"req_identifier": r.ReqIdentifier, "token": r.Token, "send_id": r.SendID,
		"operation_id": r.OperationID, "msg_incr": r.MsgIncr, "data": dataValue(r.Data),
	}, h}
}

func respCase(name string, v interface{}) frameCase {
	var r GeneralWsResp // what the SDK reads from the gateway's frame
	h := encode(v, &r)
	return frameCase{name, fmt.Sprintf("%T", v)[len("main."):], map[string]interface{}{
		"req_identifier": r.ReqIdentifier, "err_code": r.ErrCode, "err_msg": r.ErrMsg,
		"msg_incr": r.MsgIncr, "operation_id": r.OperationID, "data": dataValue(r.Data),
	}, h}
}

func group(name string) []frameCase {
	switch name {
	case "req":
		return []frameCase{
			reqCase("req_all_fields", GeneralWsReq{1001, "tok.en-123", "alice", "op-1", "1700000000000-5", []byte{0x08, 0x01}}),
			reqCase("req_zero", GeneralWsReq{}),
			reqCase("req_large_data", GeneralWsReq{1003, "t", "bob", "op-large", "2", pattern(70000)}),
			reqCase("req_send_msg_protobuf", GeneralWsReq{1003, "", "alice", "op-send", "42", msgData}),
			reqCase("req_unicode_negative", GeneralWsReq{-129, "", "héllo 你好", "", "", []byte{0}}),
			reqCase("req_data_only_300", GeneralWsReq{Data: pattern(300)}),
		}
	case "resp":
		return []frameCase{
			respCase("resp_all_fields", Resp{1001, "1700000000000-5", "op-1", 0, "", []byte{0x08, 0x2a}}),
			respCase("resp_error", Resp{1003, "7", "op-err", 1001, "ArgsError: data is not protobuf", nil}),
			respCase("resp_zero", Resp{}),
			respCase("resp_push", Resp{ReqIdentifier: 2001, Data: msgData}),
			respCase("resp_negative_errcode", Resp{1004, "x", "y", -1, "neg", []byte("z")}),
			respCase("resp_large_data", Resp{1002, "9", "op-pull", 0, "", pattern(5000)}),
		}
	case "sdkresp":
		return []frameCase{
			respCase("sdk_resp_all_fields", GeneralWsResp{1001, 0, "", "1700000000000-5", "op-1", []byte{0x08, 0x2a}}),
			respCase("sdk_resp_error", GeneralWsResp{1003, 1001, "ArgsError", "7", "op-err", nil}),
		}
	case "mixed":
		// The second struct type this process sees gets type id 66.
		first := reqCase("mixed_req_first", GeneralWsReq{1001, "t", "alice", "op", "1", []byte{1}})
		second := respCase("mixed_resp_type_id_66", Resp{1001, "1", "op", 0, "", []byte{2}})
		return []frameCase{first, second}
	case "extra":
		gob.Register(Foo{})
		seven := 7
		x := ExtraReq{
			ReqIdentifier: 1003, Flag: true, Token: "tok", Count: 1 << 40, Ratio: 3.25, SendID: "alice",
			Cplx: complex(1.5, -2), Tags: []string{"a", "", "ccc"}, Attrs: map[string]int{"k": -3},
			OperationID: "op-extra", Arr: [3]int16{0, -1, 300}, Any: "in an interface",
			AnyFoo: Foo{"foo", []int{1, 2}}, When: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
			MsgIncr: "99", Ptr: &seven, List: &Node{1, &Node{2, nil}}, Raw: []uint8{9, 8},
			Matrix: [][]float32{{1, 2}, {}, {0.5}}, Data: msgData, Tail: "end",
		}
		x.Nested.A = 5
		x.Nested.Items = []Inner{{1, "one"}, {}, {0, "three"}}
		var z ExtraReq
		z.Nested.Items = []Inner{}
		c := reqCase("req_with_extra_fields", renamed(x))
		zc := reqCase("req_with_extra_fields_zero", renamed(z))
		return []frameCase{c, zc}
	}
	panic("unknown group " + name)
}

// renamed gives v the wire type name GeneralWsReq (gob sends the Go type's name in CommonType; the
// receiver matches fields by name, so the struct's name is informational only).
func renamed(v ExtraReq) interface{} {
	type GeneralWsReq ExtraReq
	return GeneralWsReq(v)
}

func main() {
	if len(os.Args) == 2 {
		if err := json.NewEncoder(os.Stdout).Encode(group(os.Args[1])); err != nil {
			panic(err)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	var all []frameCase
	for _, g := range []string{"req", "resp", "sdkresp", "mixed", "extra"} {
		out, err := exec.Command(self, g).Output()
		if err != nil {
			panic(fmt.Sprintf("group %s: %v", g, err))
		}
		var cases []frameCase
		if err := json.Unmarshal(out, &cases); err != nil {
			panic(err)
		}
		all = append(all, cases...)
	}
	doc := map[string]interface{}{
		"generator":  "tests/interop/gob/main.go",
		"go_version": goVersion(),
		"frames":     all,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile("golden.json", append(b, '\n'), 0o644); err != nil {
		panic(err)
	}
	fmt.Printf("wrote golden.json: %d frames\n", len(all))
}

func goVersion() string { return runtime.Version() }
