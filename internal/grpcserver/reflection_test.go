package grpcserver_test

import (
	"context"
	"net"
	"testing"
	"time"

	_ "google.golang.org/genproto/googleapis/rpc/code" // a file with an enum and no message
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kubeskel/kubeskel/internal/grpcapp"
	"github.com/kubeskel/kubeskel/internal/grpcserver"
)

// reflectionRequests is one stream's worth of requests: every kind, hits
// and misses, and a symbol asked twice (the second answer carries only its
// own file: the dependencies were sent already).
var reflectionRequests = []*rpb.ServerReflectionRequest{
	{Host: "h", MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "kubeskel.echo.v1.Echo"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "kubeskel.echo.v1.Echo"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "kubeskel.echo.v1.SayRequest.message"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "grpc/health/v1/health.proto"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.HealthCheckResponse.ServingStatus"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "google/protobuf/descriptor.proto"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "google/rpc/code.proto"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "no/such.proto"}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "no.such.Symbol"}},
	// gofeaturespb extends FeatureSet with number 1002; the test binary
	// links it (through grpc-go's reflection), kubeskel's binary does not.
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingExtension{FileContainingExtension: &rpb.ExtensionRequest{ContainingType: "google.protobuf.FeatureSet", ExtensionNumber: 1002}}},
	{MessageRequest: &rpb.ServerReflectionRequest_FileContainingExtension{FileContainingExtension: &rpb.ExtensionRequest{ContainingType: "google.protobuf.FeatureSet", ExtensionNumber: 9}}},
	{MessageRequest: &rpb.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: "google.protobuf.FeatureSet"}},
	{MessageRequest: &rpb.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: "kubeskel.echo.v1.SayRequest"}},
	{MessageRequest: &rpb.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: "no.such.Message"}},
}

// kubeskel's reflection answers every request as grpc-go's reflection
// package does, over v1 and v1alpha: the same services, the same files
// (compared as FileDescriptorProto), in the same order, the same
// dependencies left out, the same error codes (the error texts differ).
func TestReflectionAnswersAsGRPCGo(t *testing.T) {
	ours := start(t, grpcserver.Options{Reflection: true})

	ref := grpc.NewServer()
	healthpb.RegisterHealthServer(ref, health.NewServer())
	grpcapp.Register(ref, echoDeps())
	reflection.Register(ref)
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ref.Serve(ln) }()
	t.Cleanup(ref.Stop)

	for _, version := range []string{"v1", "v1alpha"} {
		t.Run(version, func(t *testing.T) {
			got := askReflection(t, ours.Addr().String(), version)
			want := askReflection(t, ln.Addr().String(), version)
			for i, req := range reflectionRequests {
				if msg := diffReflection(got[i], want[i]); msg != "" {
					t.Errorf("request %d (%v): %s", i, req.GetMessageRequest(), msg)
				}
			}
		})
	}
}

// askReflection sends reflectionRequests on one stream to addr and returns the
// responses, as v1 messages whichever version was spoken.
func askReflection(t *testing.T, addr, version string) []*rpb.ServerReflectionResponse {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []*rpb.ServerReflectionResponse
	recode := func(from, to proto.Message) {
		b, err := proto.Marshal(from)
		if err == nil {
			err = proto.Unmarshal(b, to)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	switch version {
	case "v1":
		stream, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range reflectionRequests {
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("%v: %v", req, err)
			}
			out = append(out, resp)
		}
	case "v1alpha":
		stream, err := rpbalpha.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range reflectionRequests {
			var areq rpbalpha.ServerReflectionRequest //nolint:staticcheck // the deprecated v1alpha is served, so it is tested
			recode(req, &areq)
			if err := stream.Send(&areq); err != nil {
				t.Fatal(err)
			}
			aresp, err := stream.Recv()
			if err != nil {
				t.Fatalf("%v: %v", req, err)
			}
			var resp rpb.ServerReflectionResponse
			recode(aresp, &resp)
			out = append(out, &resp)
		}
	}
	return out
}

// diffReflection describes how got differs from want, or returns "".
func diffReflection(got, want *rpb.ServerReflectionResponse) string {
	if got.GetValidHost() != want.GetValidHost() || !proto.Equal(got.GetOriginalRequest(), want.GetOriginalRequest()) {
		return "host or original request differ"
	}
	if g, w := got.GetErrorResponse(), want.GetErrorResponse(); g != nil || w != nil {
		if g.GetErrorCode() != w.GetErrorCode() || (g == nil) != (w == nil) {
			return "error " + g.String() + ", want " + w.String()
		}
		return ""
	}
	if !proto.Equal(got.GetListServicesResponse(), want.GetListServicesResponse()) ||
		!proto.Equal(got.GetAllExtensionNumbersResponse(), want.GetAllExtensionNumbersResponse()) {
		return "got " + got.String() + ", want " + want.String()
	}
	g, w := got.GetFileDescriptorResponse().GetFileDescriptorProto(), want.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(g) != len(w) {
		return "files " + names(g) + ", want " + names(w)
	}
	for i := range g {
		var gf, wf descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(g[i], &gf); err != nil {
			return "file " + err.Error()
		}
		if err := proto.Unmarshal(w[i], &wf); err != nil {
			return "reference file " + err.Error()
		}
		if !proto.Equal(&gf, &wf) {
			return "file " + gf.GetName() + " differs from grpc-go's"
		}
	}
	return ""
}

func names(files [][]byte) string {
	s := "["
	for _, b := range files {
		var f descriptorpb.FileDescriptorProto
		_ = proto.Unmarshal(b, &f)
		s += " " + f.GetName()
	}
	return s + " ]"
}
