import { lazy, Suspense } from "react";
import { NavLink, Navigate, Route, Routes } from "react-router-dom";
import { useAuth } from "./auth";
import { Loading } from "./components/ui";
import AdaptersPage from "./pages/Adapters";
import AgentsPage from "./pages/Agents";
import ChatPage from "./pages/Chat";
import InboxPage from "./pages/Inbox";
import JobsPage from "./pages/Jobs";
import KeysPage from "./pages/Keys";
import PromptsPage from "./pages/Prompts";
import SchedulePage from "./pages/Schedule";
import SignIn from "./pages/SignIn";

// The charts library is large; load it with the job page only.
const JobPage = lazy(() => import("./pages/Job"));

export default function App() {
  const { me, checking, signOut } = useAuth();
  if (checking) return <Loading what="Signing in" />;
  if (!me) return <SignIn />;
  const admin = me.role === "admin";
  return (
    <div className="layout">
      <nav className="side" aria-label="Main">
        <strong>fastslow</strong>
        <div className="who">
          {me.tenant_name} · {me.role}
        </div>
        <NavLink to="/" end>
          Agents
        </NavLink>
        {admin && <NavLink to="/inbox">Feedback inbox</NavLink>}
        {admin && <NavLink to="/jobs">Jobs</NavLink>}
        {admin && <NavLink to="/keys">API keys</NavLink>}
        <button type="button" onClick={signOut} style={{ marginTop: "1rem" }}>
          Sign out
        </button>
      </nav>
      <main>
        <Routes>
          <Route path="/" element={<AgentsPage />} />
          <Route path="/agents/:slug/chat" element={<ChatPage />} />
          {admin && <Route path="/agents/:slug/prompts" element={<PromptsPage />} />}
          {admin && <Route path="/agents/:slug/adapters" element={<AdaptersPage />} />}
          {admin && <Route path="/agents/:slug/schedule" element={<SchedulePage />} />}
          {admin && <Route path="/inbox" element={<InboxPage />} />}
          {admin && <Route path="/jobs" element={<JobsPage />} />}
          {admin && (
            <Route
              path="/jobs/:id"
              element={
                <Suspense fallback={<Loading />}>
                  <JobPage />
                </Suspense>
              }
            />
          )}
          {admin && <Route path="/keys" element={<KeysPage />} />}
          <Route path="*" element={<Navigate to="/" replace />} />
        </Routes>
      </main>
    </div>
  );
}
