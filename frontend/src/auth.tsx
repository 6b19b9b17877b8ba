import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { api, getKey, ok, setKey, type Schemas } from "./api/client";

type Auth = {
  me: Schemas["Me"] | null;
  checking: boolean;
  signIn: (key: string) => Promise<void>;
  signOut: () => void;
};

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Schemas["Me"] | null>(null);
  const [checking, setChecking] = useState(Boolean(getKey()));

  const signIn = useCallback(async (key: string) => {
    setKey(key);
    try {
      setMe(await ok(api.GET("/api/v1/me")));
    } catch (err) {
      setKey(null);
      setMe(null);
      throw err;
    }
  }, []);

  const signOut = useCallback(() => {
    setKey(null);
    setMe(null);
  }, []);

  useEffect(() => {
    const key = getKey();
    if (!key) return;
    signIn(key)
      .catch(() => undefined)
      .finally(() => setChecking(false));
  }, [signIn]);

  return (
    <AuthContext.Provider value={{ me, checking, signIn, signOut }}>{children}</AuthContext.Provider>
  );
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error("useAuth outside AuthProvider");
  return auth;
}
